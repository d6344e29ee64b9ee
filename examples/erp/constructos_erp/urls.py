from django.urls import include, path

urlpatterns = [path("sales/", include("sales.urls"))]
