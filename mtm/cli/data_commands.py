"""`mtm convert` and `mtm inspect`: get data into the native format and look at it."""
