"""The API reads the service-wide settings (service.settings)."""

from service.settings import Settings, get_settings

__all__ = ["Settings", "get_settings"]
