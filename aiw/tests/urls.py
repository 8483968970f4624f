"""The site's URLs plus probe views for middleware tests (``@pytest.mark.urls``)."""

import threading

from django.urls import include, path
from rest_framework.response import Response
from rest_framework.views import APIView

from twins.models import ChangeEvent


class CountingView(APIView):
    """POST: a state change that reports how many times it ran (201)."""

    runs = 0

    def post(self, request):
        CountingView.runs += 1
        return Response({"runs": CountingView.runs, "echo": request.data}, status=201)

    def delete(self, request):
        CountingView.runs += 1
        return Response(status=204)


class FlakyView(APIView):
    """POST: fails with 500 the first time, succeeds afterwards."""

    calls = 0

    def post(self, request):
        FlakyView.calls += 1
        if FlakyView.calls == 1:
            raise RuntimeError("boom")
        return Response({"calls": FlakyView.calls}, status=201)


class SlowView(APIView):
    """POST: blocks until ``release`` is set (a request still running)."""

    started, release = threading.Event(), threading.Event()

    def post(self, request):
        SlowView.started.set()
        SlowView.release.wait(10)
        return Response({"done": True}, status=201)


class BoomView(APIView):
    def get(self, request):
        ChangeEvent.objects.get(pk=-1).missing_attribute  # noqa: B018 - raises DoesNotExist
        return Response({})


def crash(request):
    raise RuntimeError("a bug")


urlpatterns = [
    path("probe/count", CountingView.as_view()),
    path("probe/flaky", FlakyView.as_view()),
    path("probe/slow", SlowView.as_view()),
    path("probe/boom", BoomView.as_view()),
    path("probe/crash", crash),
    path("", include("opstwin_site.urls")),
]
