namespace Quantization.Onnx;

/// <summary>
/// Automatic mixed precision for <see cref="OnnxStaticQuantizer"/>: which layers keep float activations so that the
/// quantized model's outputs stay within a target of the float model's on the calibration data.
/// </summary>
/// <remarks>
/// <para>
/// A layer is a node whose activation inputs the rules quantize (see <see cref="OnnxStaticQuantizationOptions"/>).
/// Keeping it in float leaves its activation inputs unquantized; its weight is still int8, so it runs weight-only (W8A16).
/// </para>
/// <para>
/// The search: the first <see cref="MaxBatches"/> calibration feeds are run through the float model, and the quality of a
/// candidate model is the mean over those feeds of the cosine similarity between its outputs and the float model's (every
/// float graph output of a feed, concatenated). The sensitivity pass measures each layer alone: every weight quantized and
/// only that layer's activations. Layers are ranked from the lowest such cosine (the most sensitive; ties by graph order),
/// and the smallest k such that keeping the first k in float reaches <see cref="TargetCosine"/> is found by bisection over
/// k, each step an evaluation of the whole model (about log2(layers) evaluations). When even keeping every layer in float
/// misses the target (the weights alone cost more), every layer is kept and the result says so.
/// </para>
/// <para>Each evaluation builds an ONNX Runtime session with <see cref="OnnxCalibrationOptions.SessionOptions"/>; use the
/// optimisation level the model will be deployed with, since ONNX Runtime's fusions change the arithmetic.</para>
/// </remarks>
public sealed class OnnxMixedPrecisionOptions
{
    private double _targetCosine = 0.999;
    private int _maxBatches = 32;

    /// <summary>Gets or sets the mean output cosine to reach on the calibration data; 0.999 by default. Between 0 and 1.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is not in (0, 1].</exception>
    public double TargetCosine
    {
        get => _targetCosine;
        set => _targetCosine = value is > 0 and <= 1 ? value : throw new ArgumentOutOfRangeException(nameof(value), value, "The target cosine must be in (0, 1].");
    }

    /// <summary>Gets or sets how many calibration feeds (the first ones) the search evaluates on; 32 by default. Their outputs are kept in memory.</summary>
    /// <exception cref="ArgumentOutOfRangeException">The value is not positive.</exception>
    public int MaxBatches
    {
        get => _maxBatches;
        set => _maxBatches = value > 0 ? value : throw new ArgumentOutOfRangeException(nameof(value), value, "The number of evaluation batches must be positive.");
    }
}
