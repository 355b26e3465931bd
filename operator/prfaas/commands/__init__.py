"""One module a subcommand: each has ``register(subparsers)`` and raises ``CommandError``."""
