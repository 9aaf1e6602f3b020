"""Deployment files that Python reads: the Kubernetes manifests' offline validation (deploy/kubernetes)."""
