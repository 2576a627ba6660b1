"""Schemathesis hooks for test_openapi_truth.py, loaded through SCHEMATHESIS_HOOKS.

The deploy operation documents every media type it takes a bundle as. Schemathesis has
a serializer for application/octet-stream only; the gzip ones are bytes all the same.
"""

from __future__ import annotations

import schemathesis

from smcp.control.deploy import BUNDLE_MEDIA_TYPES

schemathesis.serializer.alias(
    sorted(BUNDLE_MEDIA_TYPES - {"application/octet-stream"}), "application/octet-stream"
)
