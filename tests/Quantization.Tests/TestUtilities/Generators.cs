using CsCheck;

namespace Quantization.Tests.TestUtilities;

/// <summary>Generators of tensor shapes, granularities and schemes for property tests.</summary>
internal static class Generators
{
    /// <summary>Shapes of rank 1-4 with dims chosen so that rows, columns and groups cross the vector widths.</summary>
    public static readonly Gen<int[]> Shapes = Gen.Int[1, 4].SelectMany(rank => Gen.Frequency(
        (3, Gen.Int[1, 7]),
        (2, Gen.OneOf(16, 32, 48, 64, 96)),
        (1, Gen.Int[60, 140])).Array[rank]).Where(s => s.Aggregate(1, (a, b) => a * b) <= 40_000);

    /// <summary>A shape with a granularity that fits it: any kind, any axis (negative too), a group size that divides the axis or (one time in three) leaves a partial last group.</summary>
    public static readonly Gen<(int[] Shape, QuantizationGranularity Granularity)> Layouts =
        Gen.Select(Shapes, Gen.Int[0, 3], Gen.Int[0, 100], Gen.Int[0, 100]).Select(t =>
        {
            (int[] shape, int kind, int axisPick, int groupPick) = t;
            int axis = (axisPick % (2 * shape.Length)) - shape.Length;
            int dim = shape[axis < 0 ? axis + shape.Length : axis];
            int[] divisors = Enumerable.Range(1, dim).Where(d => dim % d == 0).ToArray();
            QuantizationGranularity granularity = kind switch
            {
                0 => QuantizationGranularity.PerTensor,
                1 => QuantizationGranularity.PerChannel(axis),
                2 when groupPick % 3 == 0 => QuantizationGranularity.PerGroup((groupPick % dim) + 1, axis),
                2 => QuantizationGranularity.PerGroup(divisors[groupPick % divisors.Length], axis),
                _ => QuantizationGranularity.PerToken,
            };
            return (shape, granularity);
        });

    public static readonly Gen<QuantizationScheme> Schemes = Gen.Select(Gen.Int[0, 3], Gen.Bool, Gen.Bool).Select(t =>
    {
        NumericConvention convention = NumericConvention.All[t.Item1];
        bool ggml = convention == NumericConvention.GgmlQ8_0;
        QuantizedType type = t.Item2 || ggml ? QuantizedType.Int8 : QuantizedType.UInt8;
        return new QuantizationScheme(type, symmetric: t.Item3 || ggml, QuantizationGranularity.PerTensor, convention);
    });
}
