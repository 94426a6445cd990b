"""Every URL has one name: a name defined twice makes `{% url %}` and `redirect()` pick one of
the two silently (the API tokens page once sent its Revoke button to the REST endpoint)."""

from collections import defaultdict

from django.urls import URLPattern, URLResolver, get_resolver


def _named_patterns(resolver: URLResolver, namespace: str = "", prefix: str = ""):
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            inner = f"{namespace}{entry.namespace}:" if entry.namespace else namespace
            yield from _named_patterns(entry, inner, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern) and entry.name:
            yield f"{namespace}{entry.name}", prefix + str(entry.pattern)


def test_no_url_name_is_defined_twice():
    routes = defaultdict(list)
    for name, route in _named_patterns(get_resolver()):
        routes[name].append(route)
    duplicated = {name: where for name, where in routes.items() if len(where) > 1}
    assert duplicated == {}
