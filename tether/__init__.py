"""Tether's command line and local launcher (`tether up`, `tether bench`). No domain logic lives here."""
