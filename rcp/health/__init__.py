"""
Station health: what each rcp process knows about its links and its peers.

  - L{versions}: the versions both ends of a link tell each other at
    start-up, and the policy for a mismatch (pure).
"""
