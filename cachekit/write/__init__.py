"""Write strategies (write-through, write-behind): pure rules, one async source, its twin."""
