"""KFP pipelines of ganforge (``gan_pipeline``: ingest -> train -> evaluate || audit -> gate -> register)."""
