import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import cluster_context
from wit_world.imports.cluster_context import ListQuery, ResourceKind


class WitWorld(wit_world.WitWorld):
    def validate(self, request: str, settings: str) -> wit_world.Verdict:
        """At most `max` Services per namespace."""
        request = json.loads(request)
        limit = json.loads(settings).get("max", 10)
        kind = ResourceKind(api_version="v1", kind="Service")
        query = ListQuery(namespace=request["namespace"], label_selector=None, field_selector=None)
        try:
            services = json.loads(cluster_context.list(kind, query))["items"]
        except Err as error:  # error.value: Error_NotAllowed, Error_Unavailable, ... (.value: text)
            return reject(f"cannot list services: {error.value.value}")
        if len(services) >= limit:
            return reject(f"namespace {request['namespace']} already has {len(services)} services")
        return wit_world.Verdict(True, None, None, None, [], [])

    def validate_settings(self, settings: str) -> wit_world.SettingsVerdict:
        return wit_world.SettingsVerdict(True, None)


def reject(message: str) -> wit_world.Verdict:
    return wit_world.Verdict(False, message, 403, None, [], [])
