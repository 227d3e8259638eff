"""Glue that lets other systems (warehouses, databases) call a Headwater server."""
