from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, render

from sales import scoring
from sales.models import Opportunity


def opportunity(request: HttpRequest, pk: int) -> HttpResponse:
    """An opportunity with its lead score and grade ("score unavailable" when the model is down)."""
    item = get_object_or_404(Opportunity, pk=pk)
    return render(request, "sales/opportunity.html", {"o": item, "lead": scoring.lead_score(item.features())})


def score_metrics(_: HttpRequest) -> JsonResponse:
    """The scoring calls' outcomes so far and the circuit's state (from the client's metrics hook)."""
    return JsonResponse({"calls": dict(scoring.calls), "circuit": scoring.client().breaker(scoring.MODEL).state})
