from django.db import models


class Opportunity(models.Model):
    """A sales opportunity; ``won`` is set when it closes."""

    title = models.CharField(max_length=200)
    contact_name = models.CharField(max_length=200)  # personal: never published nor scored
    contact_email = models.EmailField()  # personal: never published nor scored
    customer_industry = models.CharField(max_length=40)
    opportunity_value = models.DecimalField(max_digits=14, decimal_places=2)
    lead_source = models.CharField(max_length=40, null=True, blank=True)
    region = models.CharField(max_length=20, null=True, blank=True)
    project_type = models.CharField(max_length=40, null=True, blank=True)
    interactions = models.IntegerField(null=True, blank=True)
    days_since_first_contact = models.IntegerField(null=True, blank=True)
    existing_customer = models.BooleanField(null=True)
    won = models.BooleanField(null=True)  # None while open
    updated_at = models.DateTimeField(auto_now=True, db_index=True)

    FEATURES = (
        "customer_industry",
        "opportunity_value",
        "lead_source",
        "region",
        "project_type",
        "interactions",
        "days_since_first_contact",
        "existing_customer",
    )

    def features(self) -> dict[str, object]:
        """The lead score model's inputs (money as a float; unset optional fields left out)."""
        row = {name: getattr(self, name) for name in self.FEATURES}
        row["opportunity_value"] = float(self.opportunity_value)
        return {k: v for k, v in row.items() if v is not None}
