"""Routes of the twin API (``twins.api.views``): /twins, /asset-types, /assets."""

from rest_framework.routers import SimpleRouter

from twins.api.views import AssetTypeViewSet, AssetViewSet, TwinViewSet

router = SimpleRouter(trailing_slash=False)
router.register("twins", TwinViewSet, basename="twin")
router.register("asset-types", AssetTypeViewSet, basename="asset-type")
router.register("assets", AssetViewSet, basename="asset")
urlpatterns = router.urls
