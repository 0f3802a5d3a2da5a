"""Applications: the processes a user runs (`telesurg init|robot|console|demo`)."""
