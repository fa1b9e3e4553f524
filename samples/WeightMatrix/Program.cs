// Quantizes a transformer-sized weight matrix to int8 per tensor, per output channel and in ggml's Q8_0 blocks,
// and prints how much each loses: the choice every quantizer makes first.

using Quantization;

const int OutFeatures = 1024, InFeatures = 1024;
int[] shape = [OutFeatures, InFeatures];
float[] weight = GaussianWeightWithOutliers(OutFeatures, InFeatures, seed: 7);

Console.WriteLine(FormattableString.Invariant($"Weight [{OutFeatures}, {InFeatures}] fp32, {weight.Length * 4 / 1024} KiB; SIMD tier: {QuantizationPrimitives.ActiveSimdTier}"));
Console.WriteLine();
QuantizationReport report = new();
foreach ((string name, QuantizationScheme scheme) in new[]
{
    ("int8 per tensor (ONNX)", QuantizationScheme.Int8PerTensor()),
    ("int8 per channel (ONNX)", QuantizationScheme.Int8PerChannel()),
    ("int8 per channel (Torch)", new QuantizationScheme(QuantizedType.Int8, true, QuantizationGranularity.PerChannel(0), NumericConvention.Torch)),
    ("int8 Q8_0 blocks of 32 (ggml)", QuantizationScheme.GgmlQ8_0()),
})
{
    report.Add(TensorErrorReport.Compare(weight, QuantizedTensor.Quantize(weight, shape, scheme, name)));
}

Console.Write(report.ToTable());

static float[] GaussianWeightWithOutliers(int rows, int columns, int seed)
{
    // Rows with different spreads and 0.1% outliers at 20 sigma: the shape of real linear-layer weights.
    Random random = new(seed);
    float[] values = new float[rows * columns];
    for (int r = 0; r < rows; r++)
    {
        double sigma = 0.01 * (0.25 + (2 * random.NextDouble()));
        for (int c = 0; c < columns; c++)
        {
            double gaussian = Math.Sqrt(-2 * Math.Log(1 - random.NextDouble())) * Math.Cos(2 * Math.PI * random.NextDouble());
            values[(r * columns) + c] = (float)(sigma * (random.NextDouble() < 0.001 ? 20 * Math.Sign(gaussian) : gaussian));
        }
    }

    return values;
}
