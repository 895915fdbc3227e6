"""Writes schemas.json: the component schemas of Microsoft's Graph v1.0
OpenAPI subset (shared/ref/msgraph/graph-v1.0-calendar-sync.openapi.yml),
descriptions dropped, for the fake's response checks.

    python3 extract.py ../../../../shared/ref/msgraph/graph-v1.0-calendar-sync.openapi.yml
"""
import json
import sys

import yaml


def strip(v):
    if isinstance(v, dict):
        return {k: strip(x) for k, x in v.items() if k not in ("description", "example", "x-ms-navigationProperty")}
    if isinstance(v, list):
        return [strip(x) for x in v]
    return v


spec = yaml.safe_load(open(sys.argv[1]))
out = {"source": sys.argv[1].rsplit("/", 1)[-1], "schemas": strip(spec["components"]["schemas"])}
json.dump(out, open("schemas.json", "w"), indent=1, sort_keys=True)
