"""Landing: the checked events as Parquet parts on a folder or object store, exactly once per event id."""
