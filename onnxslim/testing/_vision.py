"""Vision reference models: compact ResNet (basic/bottleneck), ResNet-18 shape, MobileNetV2."""

# mypy: disable-error-code="name-defined"
# (the builders subclass nn.Module from a torch imported at call time, so torch stays optional)
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from onnxslim.testing._requires import _torch


def resnet_style(
    in_channels: int = 1,
    num_classes: int = 10,
    widths: Sequence[int] = (16, 32, 64),
    blocks_per_stage: int = 2,
    bottleneck: bool = False,
):
    """A compact ResNet (basic or bottleneck blocks) for small images such as digits 32x32."""
    torch = _torch()
    nn = torch.nn

    def shortcut(cin: int, cout: int, stride: int) -> Any:
        # a 1x1 projection where the residual changes shape, else the identity (None)
        if stride == 1 and cin == cout:
            return None
        return nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    class Basic(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.down = shortcut(cin, cout, stride)

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return torch.relu(y + (x if self.down is None else self.down(x)))

    class Bottleneck(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            mid = max(cout // 4, 1)
            self.conv1 = nn.Conv2d(cin, mid, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(mid)
            self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(mid)
            self.conv3 = nn.Conv2d(mid, cout, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(cout)
            self.down = shortcut(cin, cout, stride)

        def forward(self, x):
            y = torch.relu(self.bn1(self.conv1(x)))
            y = torch.relu(self.bn2(self.conv2(y)))
            y = self.bn3(self.conv3(y))
            return torch.relu(y + (x if self.down is None else self.down(x)))

    block = Bottleneck if bottleneck else Basic

    class ResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
                nn.BatchNorm2d(widths[0]),
                nn.ReLU(),
            )
            layers, cin = [], widths[0]
            for stage, width in enumerate(widths):
                for index in range(blocks_per_stage):
                    stride = 2 if (stage > 0 and index == 0) else 1
                    layers.append(block(cin, width, stride))
                    cin = width
            self.layers = nn.Sequential(*layers)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(cin, num_classes)

        def forward(self, x):
            return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))

    return ResNet()


def resnet18_style(num_classes: int = 1000):
    """ResNet-18 geometry (widths 64-512, two basic blocks per stage, 7x7 stem + max-pool)."""
    torch = _torch()
    nn = torch.nn
    model = resnet_style(in_channels=3, num_classes=num_classes, widths=(64, 128, 256, 512))
    model.stem = nn.Sequential(
        nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(3, 2, 1)
    )
    return model


def mobilenetv2_style(num_classes: int = 1000, width: float = 1.0, in_channels: int = 3):
    """MobileNetV2 geometry: inverted residuals with depthwise convs and ReLU6."""
    torch = _torch()
    nn = torch.nn

    def channels(c: int) -> int:
        return max(8, int(c * width + 4) // 8 * 8)

    class Inverted(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, expand: int):
            super().__init__()
            hidden = cin * expand
            layers: list[Any] = []
            if expand != 1:
                layers += [
                    nn.Conv2d(cin, hidden, 1, bias=False),
                    nn.BatchNorm2d(hidden),
                    nn.ReLU6(),
                ]
            layers += [
                nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False),
                nn.BatchNorm2d(hidden),
                nn.ReLU6(),
                nn.Conv2d(hidden, cout, 1, bias=False),
                nn.BatchNorm2d(cout),
            ]
            self.body = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            return x + self.body(x) if self.residual else self.body(x)

    settings = [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ]
    cin = channels(32)
    features: list[Any] = [
        nn.Conv2d(in_channels, cin, 3, 2, 1, bias=False),
        nn.BatchNorm2d(cin),
        nn.ReLU6(),
    ]
    for expand, c, repeats, stride in settings:
        cout = channels(c)
        for index in range(repeats):
            features.append(Inverted(cin, cout, stride if index == 0 else 1, expand))
            cin = cout
    last = channels(1280) if width > 1.0 else 1280
    features += [nn.Conv2d(cin, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6()]

    class MobileNetV2(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(*features)
            self.classifier = nn.Linear(last, num_classes)

        def forward(self, x):
            x = self.features(x).mean((2, 3))
            return self.classifier(x)

    return MobileNetV2()
