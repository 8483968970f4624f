from django.urls import path

from aiw.consumers import FeedConsumer

websocket_urlpatterns = [path("ws/feed", FeedConsumer.as_asgi())]
