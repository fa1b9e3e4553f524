namespace Quantization;

/// <summary>Which channels of a layer's keys (or values) share one calibrated threshold in a <see cref="KvCacheCalibrator"/>.</summary>
public enum KvCacheScaleSharing
{
    /// <summary>Every (KV head, channel) has its own threshold from what that channel saw: the finest ranges, but a channel
    /// that was quiet during calibration saturates when a later token is larger.</summary>
    Channel,

    /// <summary>
    /// Every channel of a KV head gets the threshold of all the head's channels together (the head's envelope, as ONNX
    /// Runtime GenAI shares a threshold between RoPE channel pairs): coarser steps in the quiet channels, and headroom for
    /// tokens larger than any seen in calibration. Suited to int8, whose 255 levels leave room for the coarser steps.
    /// </summary>
    Head,
}
