"""URLs of the chat example."""

from django.urls import path

from chat_site import views

urlpatterns = [
    path("threads", views.create_thread),
    path("threads/<str:thread_id>", views.show_thread),
    path("threads/<str:thread_id>/turns", views.chat_turn),
]
