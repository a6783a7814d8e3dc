"""Inferers: MONAI's ``Inferer`` interface with the fast paths as config switches."""

from __future__ import annotations

from mimtl.inferers.accelerated import AcceleratedInferer

__all__ = ["AcceleratedInferer"]
