"""The seed write-ups' code (/work/shared/seeds/), one module per workflow: the peers we measure against."""
