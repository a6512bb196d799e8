"""Small helpers shared across unetkit."""
