from django.db import models


class StockWeek(models.Model):
    """Demand of a material in a region for one week, with the next week's actual demand."""

    recorded_by = models.CharField(max_length=200)  # personal: never published
    material_category = models.CharField(max_length=40)
    region = models.CharField(max_length=20)
    week_of_year = models.IntegerField()
    active_projects_region = models.IntegerField()
    demand_lag_1w = models.FloatField()
    demand_lag_2w = models.FloatField()
    demand_lag_4w = models.FloatField(null=True)
    unit_price_eur = models.FloatField()
    supplier_lead_time_days = models.FloatField(null=True)
    units_next_week = models.FloatField(null=True)  # known a week later
    updated_at = models.DateTimeField(auto_now=True, db_index=True)
