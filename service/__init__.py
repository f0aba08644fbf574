"""Trainyard's REST API: accepts training jobs, hands them to Ray, reports on them and forwards predictions.

Start it with ``uvicorn --factory service.main:create_app``; everything else in this package is assembled there.
"""
