"""Clients of a running deployment: the typed HTTP client (`http`), the `karyo submit` and
`karyo cases` commands (`commands`) and the throughput measurement (`throughput`)."""
