"""The twin API: twins, asset types and assets (list, detail, create, update, delete).

- **Scope**: twins and assets are narrowed to the caller's twins (``twins.scoping``): outside
  it, 404. Asset types are reference data every signed-in caller may read.
- **Who may write**: model permissions from the caller's role (``twins.roles``) *and*, for
  twins and assets, ``twins.scoping.may`` on the twin: agents and admins may register and
  change assets on twins they operate; only admins create or delete twins and change asset
  types. A visible object the caller may not change is 403.
- **Optimistic concurrency**: every read carries ``ETag: "<revision>"``; ``If-None-Match``
  with the current tag answers 304. Every update and delete must send ``If-Match`` with the
  revision it read (``*``: any): missing, 428; stale, 412 (``twins.services.StaleRevision``).
- Every write goes through ``twins.services``: audited and on the change feed.
"""

from __future__ import annotations

import django_filters
from django.db import IntegrityError
from django.db.models import ProtectedError
from django.http import Http404
from django.urls import reverse
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.exceptions import APIException, PermissionDenied, ValidationError
from rest_framework.response import Response

from twins import services
from twins.api.serializers import AssetSerializer, AssetTypeSerializer, TwinSerializer
from twins.choices import AssetKind
from twins.filters import StrictBooleanFilter, StrictChoiceFilter
from twins.models import Asset, AssetType, Twin
from twins.problems import PROBLEMS_EXTENSION
from twins.scoping import TwinScopedViewSetMixin, refusal, refusal_of_user, visible_twins


class Conflict(APIException):
    """409: the write collides with stored data (a duplicate slug, a protected reference)."""

    status_code = 409
    default_detail = "The change conflicts with stored data."
    default_code = "conflict"


class PreconditionRequired(APIException):
    """428: a write without ``If-Match`` (RFC 6585 §3)."""

    status_code = 428
    default_detail = "Send If-Match with the ETag (revision) you read, or * for any revision."
    default_code = "precondition_required"


def etag_of(obj) -> str:
    """The strong entity tag of a revisioned object: ``"<revision>"``."""
    return f'"{obj.revision}"'


def none_match(header: str | None, tag: str) -> bool:
    """True when ``If-None-Match`` matches ``tag`` (RFC 9110 §13.1.2: ``*``, or any listed
    tag under the weak comparison, ``W/"1"`` matching ``"1"``)."""
    if header is None:
        return False
    listed = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in listed or tag in listed


def expected_revision(request) -> int | None:
    """The revision ``If-Match`` names (None for ``*``).

    Raises ``PreconditionRequired`` (428) when the header is missing and a 412
    (``StaleRevision``) when it names no revision this server issues.
    """
    header = request.headers.get("If-Match")
    if header is None:
        raise PreconditionRequired()
    tag = header.strip()
    if tag == "*":
        return None
    tag = tag.removeprefix("W/").strip('"')
    if not tag.isdigit() or len(tag) > 18:
        raise services.StaleRevision(f"If-Match {header!r} names no revision")
    return int(tag)


WRITE_DOC = {PROBLEMS_EXTENSION: [409, 412, 428]}
IF_MATCH = OpenApiParameter(
    "If-Match", str, OpenApiParameter.HEADER, required=True,
    description='The ETag (revision) read, e.g. "3"; * for any. Missing: 428; stale: 412.')


class RevisionedViewSet(viewsets.ModelViewSet):
    """ETag/If-Match handling and service-backed writes shared by the three resources.

    Subclasses set ``resource_type`` and implement ``_save``/``_delete`` (the service calls)
    and ``check_write(obj_or_data, action)`` (403 for callers who may not change it).
    """

    resource_type = ""
    http_method_names = ["get", "post", "put", "patch", "delete", "head", "options"]

    def retrieve(self, request, *args, **kwargs):
        obj = self.get_object()
        tag = etag_of(obj)
        if none_match(request.headers.get("If-None-Match"), tag):
            return Response(status=status.HTTP_304_NOT_MODIFIED, headers={"ETag": tag})
        return Response(self.get_serializer(obj).data, headers={"ETag": tag})

    def create(self, request, *args, **kwargs):
        serializer = self.get_serializer(data=request.data)
        self._validate(serializer)
        obj = self.serializer_class.Meta.model(**serializer.validated_data)
        self.check_write(obj, "add")
        self._guarded(self._save, obj, None)
        return Response(self.get_serializer(obj).data, status=status.HTTP_201_CREATED,
                        headers={"ETag": etag_of(obj), "Location": self._location(obj)})

    def update(self, request, *args, **kwargs):
        obj = self.get_object()
        self.check_write(obj, "change")
        serializer = self.get_serializer(obj, data=request.data,
                                         partial=kwargs.pop("partial", False))
        self._validate(serializer)
        revision = expected_revision(request)
        for field, value in serializer.validated_data.items():
            setattr(obj, field, value)
        self._guarded(self._save, obj, revision)
        return Response(self.get_serializer(obj).data, headers={"ETag": etag_of(obj)})

    def destroy(self, request, *args, **kwargs):
        obj = self.get_object()
        self.check_write(obj, "delete")
        self._guarded(self._delete, obj, expected_revision(request))
        return Response(status=status.HTTP_204_NO_CONTENT)

    @staticmethod
    def _validate(serializer) -> None:
        """400 naming the fields, except a slug already taken: 409 (the request is fine, the
        stored data is in the way)."""
        if serializer.is_valid():
            return
        codes = serializer.errors and ValidationError(serializer.errors).get_codes()
        if isinstance(codes, dict) and any("unique" in c for c in codes.values()):
            raise Conflict(" ".join(str(m) for v in serializer.errors.values() for m in v))
        raise ValidationError(serializer.errors)

    @staticmethod
    def _guarded(write, obj, revision) -> None:
        """Run a service write; a race the serializer could not see (two creates of one slug,
        a row that became referenced) is a 409, not a 500."""
        try:
            write(obj, revision)
        except IntegrityError as exc:
            raise Conflict(f"conflicts with stored data: {str(exc).splitlines()[0]}") from exc
        except ProtectedError as exc:
            raise Conflict(f"still referred to by {len(exc.protected_objects)} object(s)") from exc

    def _location(self, obj) -> str:
        return reverse(f"{self.basename}-detail",
                       kwargs={self.lookup_field: getattr(obj, self.lookup_field)})

    def _refuse(self, reason: str) -> None:
        if reason:
            raise PermissionDenied(reason)


class TwinFilterSet(django_filters.FilterSet):
    slug = django_filters.CharFilter()
    name = django_filters.CharFilter(lookup_expr="icontains")

    class Meta:
        model = Twin
        fields = ["slug", "name"]


class AssetTypeFilterSet(django_filters.FilterSet):
    base_kind = StrictChoiceFilter(choices=AssetKind.choices)

    class Meta:
        model = AssetType
        fields = ["base_kind"]


class AssetFilterSet(django_filters.FilterSet):
    twin = django_filters.CharFilter(field_name="twin__slug")
    asset_type = django_filters.CharFilter(field_name="asset_type__slug")
    parent = django_filters.CharFilter(field_name="parent__slug")
    root = StrictBooleanFilter(field_name="parent", lookup_expr="isnull",
                               label="true: only assets without a parent; false: only children")
    kind = StrictChoiceFilter(choices=AssetKind.choices)
    slug = django_filters.CharFilter()

    class Meta:
        model = Asset
        fields = ["twin", "asset_type", "parent", "root", "kind", "slug"]


def documented(noun: str, plural: str):
    """``extend_schema_view`` with one summary per operation, and If-Match with its problem
    statuses on the writes."""
    writes = {"extensions": WRITE_DOC, "parameters": [IF_MATCH]}
    return extend_schema_view(
        list=extend_schema(summary=f"List {plural}"),
        retrieve=extend_schema(summary=f"Read one {noun} (ETag: its revision)"),
        create=extend_schema(summary=f"Create a {noun}", extensions={PROBLEMS_EXTENSION: [409]}),
        update=extend_schema(summary=f"Replace a {noun} (If-Match)", **writes),
        partial_update=extend_schema(summary=f"Change fields of a {noun} (If-Match)", **writes),
        destroy=extend_schema(summary=f"Delete a {noun} (If-Match)", **writes),
    )


@documented("twin", "the twins the caller may see")
class TwinViewSet(RevisionedViewSet):
    """Twins the caller may see; admins create and delete them, operators of a twin with
    ``twins.change_twin`` rename it."""

    queryset = Twin.objects.all()
    serializer_class = TwinSerializer
    filterset_class = TwinFilterSet
    lookup_field = "slug"
    basename = "twin"

    def get_queryset(self):
        return visible_twins(self.request.user).order_by("slug")

    def check_write(self, twin: Twin, verb: str) -> None:
        permission = f"twins.{verb}_twin"
        self._refuse(refusal_of_user(self.request.user, permission) if twin.pk is None
                     else refusal(self.request.user, permission, twin))

    def _save(self, twin: Twin, revision: int | None) -> None:
        services.save_twin(twin, actor=self.request.user, request=self.request,
                           expected_revision=revision)

    def _delete(self, twin: Twin, revision: int | None) -> None:
        services.delete_twin(twin, actor=self.request.user, request=self.request,
                             expected_revision=revision)


@documented("asset type", "asset types")
class AssetTypeViewSet(RevisionedViewSet):
    """Asset types: every signed-in caller reads them; only admins change them."""

    queryset = AssetType.objects.all()
    serializer_class = AssetTypeSerializer
    filterset_class = AssetTypeFilterSet
    lookup_field = "slug"
    basename = "asset-type"

    def check_write(self, _asset_type, verb: str) -> None:
        self._refuse(refusal_of_user(self.request.user, f"twins.{verb}_assettype"))

    def _save(self, asset_type: AssetType, revision: int | None) -> None:
        services.save_asset_type(asset_type, actor=self.request.user, request=self.request,
                                 expected_revision=revision)

    def _delete(self, asset_type: AssetType, revision: int | None) -> None:
        services.delete_asset_type(asset_type, actor=self.request.user, request=self.request,
                                   expected_revision=revision)


@documented("asset", "the assets of the caller's twins")
class AssetViewSet(TwinScopedViewSetMixin, RevisionedViewSet):
    """Assets of the twins the caller may see, by id; agents and admins register and change
    them on twins they operate (``twins.add_asset``/``change_asset``/``delete_asset``)."""

    queryset = Asset.objects.select_related("twin", "asset_type", "parent")
    serializer_class = AssetSerializer
    filterset_class = AssetFilterSet
    basename = "asset"

    def get_serializer_context(self):
        context = super().get_serializer_context()
        slug = self.request.data.get("twin") if isinstance(self.request.data, dict) else None
        twin = None
        if isinstance(slug, str):
            twin = visible_twins(self.request.user).filter(slug=slug).first()
        elif self.kwargs.get("pk") is not None:
            twin = Twin.objects.filter(assets__pk=self.kwargs["pk"]).first()
        context["twin"] = twin
        return context

    def get_serializer(self, *args, **kwargs):
        serializer = super().get_serializer(*args, **kwargs)
        if not kwargs.get("many"):
            # Only the caller's twins are valid values of ``twin``: another reads as unknown.
            serializer.fields["twin"].queryset = visible_twins(self.request.user)
        return serializer

    def create(self, request, *args, **kwargs):
        """A ``twin`` outside the caller's scope is 404, as if it did not exist (like a
        proposal on such a twin), before the body is judged."""
        slug = request.data.get("twin") if isinstance(request.data, dict) else None
        if isinstance(slug, str) and not visible_twins(request.user).filter(slug=slug).exists():
            raise Http404("no such twin")
        return super().create(request, *args, **kwargs)

    def check_write(self, asset: Asset, verb: str) -> None:
        if asset.twin_id is None:
            raise Http404("no such twin")
        self._refuse(refusal(self.request.user, f"twins.{verb}_asset", asset.twin))

    def _save(self, asset: Asset, revision: int | None) -> None:
        services.save_asset(asset, actor=self.request.user, request=self.request,
                            expected_revision=revision)

    def _delete(self, asset: Asset, revision: int | None) -> None:
        services.delete_asset(asset, actor=self.request.user, request=self.request,
                              expected_revision=revision)
