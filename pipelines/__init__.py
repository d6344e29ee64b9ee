"""Everything around the served models, one subpackage per concern:

* :mod:`pipelines.training`   the kfp DAG (extract → validate → train → evaluate → deploy), run/compile/submit
* :mod:`pipelines.streaming`  Kafka: topics, the trigger (intake, landing, retraining), publisher, lifecycle events
* :mod:`pipelines.monitoring` drift, live accuracy, outcomes, the payload log, the monitoring service
* :mod:`pipelines.rollout`    canary decisions, the cluster and overlay targets, the rollout CLI
* :mod:`pipelines.manifests`  kustomize overlays: render from the specs, build, validate
"""
