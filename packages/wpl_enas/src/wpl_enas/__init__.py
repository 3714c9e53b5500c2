"""wpl_enas."""
