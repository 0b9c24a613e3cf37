"""The async client api_box uses to talk to workers."""
