"""The development stack: every service process on this machine, without Docker (`stack`), and
the `karyo stack up|status|down` commands (`commands`)."""
