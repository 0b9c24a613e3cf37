"""Tether's command line and local launcher (`tether up`). No domain logic lives here."""
