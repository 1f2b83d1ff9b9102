"""Infrastructure shared by the API and the workers: settings and object storage.

Depends on the core package (`karyoflow`) only for domain types; the core never imports it."""
