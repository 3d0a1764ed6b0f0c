"""What is not in the paper: variants the project adds, each marked as such (docs/method.md)."""
