namespace Quantization.Onnx;

/// <summary>What the mixed-precision search of <see cref="OnnxStaticQuantizer"/> measured and chose (see <see cref="OnnxMixedPrecisionOptions"/>).</summary>
/// <param name="TargetCosine">The target it searched for.</param>
/// <param name="Batches">The number of calibration feeds it evaluated on.</param>
/// <param name="WeightsOnlyCosine">The mean output cosine with every weight quantized and no activation.</param>
/// <param name="AllQuantizedCosine">The mean output cosine with every activation the rules choose quantized.</param>
/// <param name="FinalCosine">The mean output cosine of the model it chose.</param>
/// <param name="Layers">Every layer's sensitivity, most sensitive first.</param>
public sealed record OnnxMixedPrecisionResult(double TargetCosine, int Batches, double WeightsOnlyCosine, double AllQuantizedCosine, double FinalCosine, IReadOnlyList<OnnxLayerSensitivity> Layers)
{
    /// <summary>Gets the names of the layers kept with float activations, most sensitive first.</summary>
    public IReadOnlyList<string> KeptInFloat => [.. Layers.Where(l => l.KeptInFloat).Select(l => l.Node)];

    /// <summary>Gets a value indicating whether the chosen model reaches the target.</summary>
    public bool ReachesTarget => FinalCosine >= TargetCosine;
}
