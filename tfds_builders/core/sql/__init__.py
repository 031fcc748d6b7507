"""The SQL driver layer that the database builder and augmented's SQL side tables share."""
