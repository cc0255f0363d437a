"""The configuration's reusable model types (:mod:`exporter.schema.types`) and the target model
(:mod:`exporter.schema.target`), below the providers that extend them and the config that
assembles them."""
