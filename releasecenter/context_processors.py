def navigation(request):  # noqa: ANN001, ANN201
    """The project in the URL, for the navigation bar (views set request.project)."""
    return {"nav_project": getattr(request, "project", None)}
