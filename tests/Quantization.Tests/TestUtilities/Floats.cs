using CsCheck;

namespace Quantization.Tests.TestUtilities;

/// <summary>Generators of float data that exercises quantization's edge cases.</summary>
internal static class Floats
{
    /// <summary>
    /// Finite values for a scale near 1: ordinary values inside and outside the int8 range, exact .5 ties, values one
    /// ulp from a tie, subnormals, signed zeros and huge values that saturate.
    /// </summary>
    public static readonly Gen<float> Finite = Gen.Frequency(
        (6, Gen.Float[-300f, 300f]),
        (3, Gen.Int[-600, 600].Select(k => k + 0.5f)),
        (2, Gen.Int[-600, 600].Select(k => MathF.BitIncrement(k + 0.5f))),
        (2, Gen.Int[-600, 600].Select(k => MathF.BitDecrement(k + 0.5f))),
        (1, Gen.Int[-100_000, 100_000].Select(k => k * float.Epsilon)),
        (1, Gen.OneOf(0f, -0f, float.MaxValue, float.MinValue, 1e30f, -1e30f, 16_777_217f, -8_388_609.5f)),
        (1, Gen.Float.Where(float.IsFinite)));

    /// <summary>Any float, including NaN and both infinities.</summary>
    public static readonly Gen<float> Any = Gen.Frequency(
        (8, Finite),
        (1, Gen.OneOf(float.NaN, float.PositiveInfinity, float.NegativeInfinity)));

    /// <summary>Deterministic pseudo-random finite data of a given length, from <see cref="Finite"/>.</summary>
    public static float[] Array(int length, uint seed) => Finite.Array[length].Generate(new PCG(seed), null, out _);
}
