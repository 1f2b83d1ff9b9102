"""Tools around a running deployment: the development stack (`service.devstack`), the API's
typed client with the `karyo submit|cases|throughput` commands (`service.client`), and the
`karyo` entry point that adds these commands to the core's (`service.cli`)."""
