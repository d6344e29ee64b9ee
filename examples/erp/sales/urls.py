from django.urls import path

from sales import views

urlpatterns = [
    path("opportunities/<int:pk>/", views.opportunity, name="opportunity"),
    path("score-metrics", views.score_metrics, name="score-metrics"),
]
