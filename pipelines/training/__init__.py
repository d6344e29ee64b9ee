"""The training pipeline: plain step functions, thin kfp components, the DAG, local and cluster launchers."""
