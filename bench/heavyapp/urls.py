"""
The site's URLs: the hello the bench loads, and the admin, loaded as a
real project loads it.
"""

from __future__ import annotations

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import path


def hello(request: HttpRequest) -> HttpResponse:
    """The bench's answer, the same five bytes as every other server's."""
    return HttpResponse(b"hello", content_type="text/plain")


urlpatterns = [path("", hello), path("admin/", admin.site.urls)]
