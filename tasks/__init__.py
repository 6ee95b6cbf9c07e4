"""Task modules: each imports the Huey instance from qrq.queue and registers its tasks."""
