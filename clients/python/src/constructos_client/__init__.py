"""constructos-client: call ConstructOS models from a Django service and publish ERP rows."""

__version__ = "0.1.0"
