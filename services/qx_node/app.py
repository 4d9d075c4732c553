"""The qx-node HTTP application. ``create_app(settings)`` builds the node and its API."""

from __future__ import annotations

from fastapi import FastAPI

from qx_node.api import create_app as _create_app
from qx_node.node import Node
from qx_node.settings import Settings


def create_app(settings: Settings) -> FastAPI:
    return _create_app(Node(settings))
