from django.db import models


class PaymentHistory(models.Model):
    """A customer's payment behaviour over the last year, and whether it defaulted within 90 days."""

    customer_name = models.CharField(max_length=200)  # personal: never published
    tax_id = models.CharField(max_length=40)  # personal: never published
    industry_segment = models.CharField(max_length=40)
    company_age_years = models.FloatField()
    annual_revenue_eur = models.DecimalField(max_digits=16, decimal_places=2, null=True)
    active_projects = models.IntegerField()
    avg_days_to_pay = models.FloatField()
    late_payment_ratio_12m = models.FloatField()
    outstanding_balance_eur = models.DecimalField(max_digits=16, decimal_places=2)
    credit_utilisation = models.FloatField(null=True)
    contract_type = models.CharField(max_length=40, null=True)
    retention_held = models.BooleanField(null=True)
    defaulted_90d = models.BooleanField(null=True)  # known 90 days after the period
    updated_at = models.DateTimeField(auto_now=True, db_index=True)
