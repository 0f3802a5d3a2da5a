"""Stereo endoscope video: sources, low-latency H.264/HEVC codec, FEC packetizer, receiver, display, metrics.

Data flow (one `VideoSender` per robot, one `VideoReceiver` per console):

    FrameSource.read() -> framecode stamp -> VideoEncoder (one per eye, in parallel) -> Packetizer (+XOR FEC)
        -> link VIDEO class -> Reassembler (FEC repair, <= 1 frame jitter buffer) -> VideoDecoder
        -> frame code check -> VideoMetrics / LatestFrames -> StereoDisplay
    VideoReceiver --KeyframeRequest (link event channel)--> VideoSender.handle_event

Modules: frame, framecode, sources, codec, fec, packetizer, reassembly, control, pipeline, metrics,
display, link_driver (asyncio glue for `telesurg.link.driver.LinkEndpoint`).
"""
