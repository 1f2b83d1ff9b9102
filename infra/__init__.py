"""The runtime configuration the API and the workers share: settings from the environment
(`infra.settings`) and the object store (`infra.storage`).

Imports nothing of the other service packages (db, workers, api, service), so every one of them
can depend on it."""
